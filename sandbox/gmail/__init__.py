"""The sandbox Gmail API: :class:`~sandbox.gmail.store.GmailStore` served by :class:`~sandbox.gmail.app.GmailApp`."""
