"""The terminal and phone applications: everything that runs either program goes through them."""
