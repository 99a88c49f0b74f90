"""Enrollment: tokens, enrolling a device and revoking it.

``tokens`` (enrollment tokens: create, list, revoke, consume a use), ``enroll`` (``enroll_device``,
``revoke_device``: a revocation cancels the device's pending commands and its unreleased campaign targets).
"""
