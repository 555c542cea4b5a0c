"""The sandbox Gmail API: :class:`~sandbox.gmail.store.GmailStore` served by :class:`~sandbox.gmail.app.GmailApp`.

    store = GmailStore()
    app = GmailApp(tokens=registry, store=store)   # WSGI: /gmail/v1/, /batch, /upload/, /resumable/upload/
    store.insert_message("alice@gmail.com", raw)   # or store.seed(email, generate_messages(...))
    store.quota_enabled = True; store.fail_next(3, status=503); store.expire_history(email)

Clients build google-api-python-client from :func:`sandbox.gmail.discovery.discovery_document`
with the sandbox URL as root; :func:`sandbox.gmail.discovery.schema_errors` checks answers.
"""
