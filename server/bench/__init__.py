"""`mutual bench`: a realistic dataset, both faces under HTTP load, and the plaintext floor."""
