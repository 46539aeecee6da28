"""Blob stores: where encrypted objects live. They only ever see ciphertext."""
