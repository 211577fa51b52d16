"""A lead as people see it (the API's document, the template context) and erasing one (GDPR)."""
