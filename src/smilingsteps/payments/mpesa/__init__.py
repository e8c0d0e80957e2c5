"""M-Pesa Express through Safaricom's Daraja API: the protocol, a typed client, and a local simulator."""
