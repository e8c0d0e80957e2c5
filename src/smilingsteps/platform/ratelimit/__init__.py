"""Request rate limiting: policies per endpoint class, GCRA, Redis or memory."""
