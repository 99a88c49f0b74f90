"""Test machinery shared by the test folders: databases, fakes of outside services, real processes.

No test module imports another test module or a ``conftest``; what they share lives here.
"""
