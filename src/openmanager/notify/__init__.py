"""Notifications: per-user preferences, routing of alert transitions, the outbox, digests, and the
delivery channels (in-app, Web Push, webhook, email)."""
