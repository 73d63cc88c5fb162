"""CRM: people, organisations and notes."""
