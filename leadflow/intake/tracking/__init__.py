"""Website tracking: the snippet (`/t/leadflow.js`), the public collect endpoint, identity and attribution."""
