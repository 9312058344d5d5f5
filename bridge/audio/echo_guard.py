"""Telling a party's echo of our translation from the party talking (the echo guard's decision).

A speakerphone plays what we send and its microphone picks it up again: a delayed, scaled,
band-limited copy of what was heard. The party's own voice is not a copy of anything we played.
So each 20 ms microphone frame is compared with what was played:

* A *search* correlates the last ``SEARCH_WINDOW_S`` of microphone audio with the recent history
  of what was heard, over every lag (one FFT correlation). A match fixes the echo path: how far
  the played stream runs ahead of the microphone stream (``offset``, in samples).
* While the path is known, every frame is *tracked*: correlated with what was played at that
  offset (give or take ``TRACK_SLACK``), a few dot products. A match is echo, at once.

The decision covers the frame being checked. The previous design re-decided every 100 ms from
the window before and applied it to the next 100 ms; a quiet window (a pause in the translation,
the echo not back yet) counted as "not echo", so the first 80-120 ms of the echo that followed
reached the engine, in most calls but not all (it depended on where the 100 ms grid fell).
Here only a search that *hears sound unlike what was played* lets audio through; silence never
does, and once through, the echo returning at the known offset is caught on its first frame.

Pure and single-threaded: one guard per leg, called from that party's stream thread only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bridge.audio.pcm import TWILIO_RATE_HZ, Samples

Floats = NDArray[np.float64]

# Normalised correlation at or above which microphone audio is taken for an echo. An echo
# through a phone (band-limited, μ-law twice) still scores above 0.8; the party's own voice,
# or their voice over a weaker echo, scores below 0.4.
ECHO_LIKENESS = 0.5
# An echo of sound mostly outside the phone's band (300-3400 Hz; a voiced onset's low
# fundamental) comes back much quieter than what was played and only partly like it (0.34
# measured). A frame quieter than the echo expected there and at least this much like it is
# taken for echo, whatever the last decision was. Another voice scores this much by chance in
# ~30% of frames (the demo's agent against its caller, best of a frame's 33 lags), so only the
# party's speech quieter than our echo is affected: never told apart from it anyway (double
# talk still passes 94% of their speech frames, as before).
PARTIAL_LIKENESS = 0.25
# Likeness at which a match is trusted to locate the echo path (to lock onto it, to move it,
# to learn the echo's level): an echo through a phone scores above 0.85, while the party talking
# over the echo, their voice matching some other lag by chance, scores up to ~0.7.
LOCK_LIKENESS = 0.8
# What a search compares: long enough that one syllable of speech cannot match by chance.
SEARCH_WINDOW_S = 0.2
# Searches are FFTs (~300 us). On average at most one per SEARCH_EVERY_S (the old guard's
# rate), in bursts of up to SEARCH_BURST; while the decision is "echo" and a frame does not
# track, the next may come SEARCH_SOON_S after the last, so talking over the echo is let
# through quickly.
SEARCH_EVERY_S = 0.1
SEARCH_SOON_S = 0.04
SEARCH_BURST = 2.0
# The longest round trip searched for, beyond what Twilio has played: the network both ways
# plus the room (measured speakerphones: 20-200 ms acoustic, 100-300 ms network).
MAX_ECHO_DELAY_S = 0.6
# The echo path moves a little (jitter at Twilio, clock drift): tracking looks this far around
# the known offset (samples, 2 ms).
TRACK_SLACK = 16
# Talking over the echo: a frame unlike the echo at the known path passes only if it is this
# much louder than that echo would be (amplitude ratio, 6 dB).
DOUBLE_TALK_RATIO = 2.0
# Frames quieter than this (about -55 dBFS) carry nothing worth translating nor deciding on.
QUIET_RMS = 58.0

_SEARCH_SAMPLES = int(SEARCH_WINDOW_S * TWILIO_RATE_HZ)
_SEARCH_EVERY = int(SEARCH_EVERY_S * TWILIO_RATE_HZ)
_SEARCH_SOON = int(SEARCH_SOON_S * TWILIO_RATE_HZ)
_HISTORY = _SEARCH_SAMPLES + int(MAX_ECHO_DELAY_S * TWILIO_RATE_HZ)


class EchoGuard:
    """Frame by frame: is this microphone audio an echo of what was played to the party?"""

    def __init__(self) -> None:
        self._mic = np.zeros(_SEARCH_SAMPLES, dtype=np.float64)  # the last search window
        self.searches = 0  # FFT searches run (for tests and benchmarks)
        self.reset()

    def reset(self) -> None:
        """Nothing of ours is audible: the next playback starts presumed echo until told
        otherwise (its first syllables are enough for the model to translate it back), and its
        echo path is learnt again (Twilio's buffer ran dry in between: the offset moved)."""
        self._mic[:] = 0.0
        self._mic_end = 0  # microphone samples seen since the reset
        self._offset: int | None = None  # heard position - microphone position of the echo
        self._gain = 1.0  # the echo's amplitude relative to what was played (last match)
        self._expected = 0.0  # the echo's energy expected in the frame just tracked
        self._likeness = 0.0  # how much that frame looked like it (at the best lag)
        self._since_search = _SEARCH_EVERY  # microphone samples since the last search
        self._search_credit = SEARCH_BURST  # searches that may run now (refills over time)
        self._echo = True

    def is_echo(self, frame: Samples, heard: Samples, heard_end: int) -> bool:
        """Whether ``frame`` (the party's microphone, 8 kHz) is our echo.

        ``heard`` is the recent history of what was sent to the party and has begun playing,
        oldest first; ``heard_end`` is the stream position (samples heard since the start,
        silences included) of its last sample, so positions stay comparable while the history
        slides and across pauses (Playout.heard).
        """
        n = len(frame)
        x = frame.astype(np.float64)
        self._mic[:-n] = self._mic[n:]  # in place: this runs for every frame
        self._mic[-n:] = x
        self._mic_end += n
        self._since_search += n
        self._search_credit = min(SEARCH_BURST, self._search_credit + n / _SEARCH_EVERY)
        energy = float(np.dot(x, x))
        if energy < n * QUIET_RMS**2:
            return self._echo  # silence decides nothing, and attenuating it costs nothing
        if self._offset is None:
            if self._may_search():
                self._echo = self._search(heard, heard_end) >= ECHO_LIKENESS
            return self._echo
        if self._track(x, energy, heard, heard_end):
            self._echo = True
            return True
        # Unlike the echo at the known path: the party talking over it, or the path moved
        # (Twilio played late after a gap, the network's delay changed). A search tells: no
        # echo in the window, or an echo clearly at a new offset.
        if self._may_search():
            known = self._offset
            if self._search(heard, heard_end) < ECHO_LIKENESS:
                self._echo = False
                return False
            if self._offset != known:
                self._echo = True
                return True
        # The window still sounds like the echo at the known path; this frame does not. If it
        # is no louder than that echo should be, it may be an echo that merely correlates
        # poorly (a quiet tail blurred by μ-law, a handset damping it): nothing to let through.
        if energy < self._expected * DOUBLE_TALK_RATIO**2:
            if energy < self._expected and self._likeness >= PARTIAL_LIKENESS:
                # Quieter than the echo would be and partly like it: an echo of sound that
                # is mostly outside the phone's band (a voiced onset), whatever came before.
                self._echo = True
            return self._echo
        self._echo = False
        return False

    def _may_search(self) -> bool:
        if self._search_credit < 1.0:
            return False
        return self._since_search >= (_SEARCH_SOON if self._echo else _SEARCH_EVERY)

    def _track(self, x: Floats, energy: float, heard: Samples, heard_end: int) -> bool:
        """The frame against what was heard at the known offset, give or take TRACK_SLACK."""
        assert self._offset is not None
        n = len(x)
        start = self._mic_end - n + self._offset - TRACK_SLACK - (heard_end - len(heard))
        stop = start + n + 2 * TRACK_SLACK
        if start < 0 or stop > len(heard):
            self._expected = 0.0
            self._likeness = 0.0
            return False
        p = heard[start:stop].astype(np.float64)
        # Few lags: a direct correlation costs less than an FFT's overheads. Over 4 ms the
        # played energy hardly changes, so the best raw correlation is the best match.
        corr = np.correlate(p, x, "valid")
        best = int(np.argmax(corr))
        if corr[TRACK_SLACK] >= 0.95 * corr[best]:
            best = TRACK_SLACK  # periodic sound matches a period away too: stay put
        played = p[best : best + n]
        window = max(float(np.dot(played, played)), 1e-9)
        self._expected = self._gain**2 * window
        likeness = float(corr[best]) / np.sqrt(window * energy)
        self._likeness = likeness
        if likeness < ECHO_LIKENESS:
            return False
        if likeness >= LOCK_LIKENESS:  # a clean echo: follow the path as it drifts
            self._gain = float(corr[best]) / window
            self._offset += best - TRACK_SLACK
        return True

    def _search(self, heard: Samples, heard_end: int) -> float:
        """The last SEARCH_WINDOW_S of microphone against the history, at every lag: the best
        likeness. A match good enough to trust (re)locates the echo path."""
        self.searches += 1
        self._since_search = 0
        self._search_credit -= 1.0
        history = heard[-_HISTORY:]
        likeness, lag = echo_match(self._mic, history)
        if likeness < LOCK_LIKENESS:
            return likeness
        # The window's first sample matched history[lag]: that is heard position
        # heard_end - len(history) + lag, and microphone position mic_end - window.
        offset = heard_end - len(history) + lag - (self._mic_end - len(self._mic))
        if self._offset is None or abs(offset - self._offset) > TRACK_SLACK:
            self._offset = offset
        played = history[lag : lag + len(self._mic)].astype(np.float64)
        self._gain = float(np.dot(played, self._mic)) / max(float(np.dot(played, played)), 1e-9)
        return likeness


def echo_match(mic: Samples | Floats, played: Samples) -> tuple[float, int]:
    """How much ``mic`` looks like a (delayed, scaled) copy of part of ``played``: the highest
    normalised cross-correlation over every lag (0..1), and that lag (``mic`` matches
    ``played[lag : lag + len(mic)]``).

    An echo of what we played correlates strongly at the lag of its round trip, whatever its
    level; the party's own voice does not. One FFT correlation.
    """
    n, total = len(mic), len(played)
    if n == 0 or total < n:
        return 0.0, 0
    m = mic.astype(np.float64)
    m -= m.mean()
    mic_energy = float(np.dot(m, m))
    if mic_energy < n * 10.0**2:  # below ~-70 dBFS: nothing to tell apart
        return 0.0, 0
    p = played.astype(np.float64)
    # Circular correlation over ``size >= total`` points equals the linear one at the lags
    # used here (0 … total - n: the mic window never wraps past the end of ``played``), and
    # a 5-smooth length is several times faster than the next power of two above total + n.
    size = _fast_length(total)
    corr = np.fft.irfft(np.fft.rfft(p, size) * np.conj(np.fft.rfft(m, size)), size)
    corr = corr[: total - n + 1]
    energy = np.concatenate(([0.0], np.cumsum(p * p)))
    windows = energy[n:] - energy[:-n]
    ratios = corr / np.sqrt(np.maximum(windows, 1e-9) * mic_energy)
    best = int(np.argmax(ratios))
    return float(np.clip(ratios[best], 0.0, 1.0)), best


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT length pocketfft handles at full speed."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35
            while p235 < n:
                p235 *= 2
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best
