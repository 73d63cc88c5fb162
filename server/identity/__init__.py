"""Identity: staff and customer accounts, passwords, server-side sessions, sign-in limits."""
