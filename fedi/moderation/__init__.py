"""Instance moderation: domain blocks and allows, subscriptions, reports, rules, the audit log."""
