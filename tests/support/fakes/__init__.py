"""Fakes of outside services, each a real HTTP server on loopback (FCM, a webhook receiver, APK files)."""
