"""Print a ClamAV .ndb signature for the 68-byte EICAR test string.

Built from two halves, as holdscan.lab.clamd builds it, so that no file in the repository
or in the image's build context is itself detected by a virus scanner."""

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
print(f"Eicar-Test-Signature:0:*:{EICAR.hex()}")
