"""IMAP and SMTP: the transport Outlook (XOAUTH2) uses, and any IMAP/SMTP server can."""
