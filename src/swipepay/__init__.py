"""swipepay: a bank card read by a POS or ATM, the payment confirmed and the PIN typed on the
cardholder's phone over NFC.

The one import package of the distribution. Its parts live in the repository's top-level
folders and are installed beneath this name:

- ``swipepay.firmware_sim``: sans-IO protocol and firmware logic (bytes and events in and out);
- ``swipepay.drivers``: I/O only, chosen by URL;
- ``swipepay.center``: the payment center (authorization, ledger, storage, TLS server);
- ``swipepay.cli``: the terminal and phone applications, the command line and the test harness.
"""

__version__ = "0.1.0"
