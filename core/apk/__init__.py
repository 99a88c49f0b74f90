"""APK builds: uploads and their stored blobs, downloads and their audit events."""
