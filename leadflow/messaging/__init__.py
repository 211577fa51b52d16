"""Messaging: one step's message (rendering, the send-time policy, delivery exactly once) and the
providers that carry it (SMTP, Twilio, web push, signed webhooks), push subscriptions and signed links."""
