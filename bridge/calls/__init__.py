"""Calls: a call and its two legs, call control, transcripts and call events."""
