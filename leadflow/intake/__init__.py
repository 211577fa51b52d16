"""Intake: leads and events in (API and website), identities, the outbox router to the lead workflows,
the tracking snippet and engagement coming back (open pixel, clicks, unsubscribe, Twilio)."""
