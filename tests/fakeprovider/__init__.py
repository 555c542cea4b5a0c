"""A provider that keeps its mailboxes in this process: the smallest whole provider, for the tests that show
adding one is this folder and one registry line (``tests/providers/test_fake_provider.py``)."""
