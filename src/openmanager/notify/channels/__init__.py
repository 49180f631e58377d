"""Delivery channels behind the `notify.message.Channel` protocol: `webhook`, `email` and `webpush` (in-app
is the `notifications` topic). Each is imported only when configured, so this package imports nothing."""
