"""A deterministic generator of the Thanh Hóa business registry and cash-register invoice feed."""
