"""The HTTP surface: Twilio webhooks, the Media Stream route, the admin API, the console."""
