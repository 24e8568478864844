"""What the tests share: fixtures and builders, registered once by tests/conftest.py.

Test modules import from here (never from another test module or a conftest):

- ``labs``: a lab directory per test (copied from one made per session) and lab phones;
- ``world``: an in-memory center with one enrolled card and phone (the center's unit tests);
- ``lab_center``: a lab's cardholders signing requests, the TLS server on a thread, a raw
  ISO 8583 client;
- ``phonelink``: a terminal and a phone joined in memory, with a throwaway CA;
- ``phones``: a lab phone served on a ``tcp:`` link in a thread;
- ``pty``: two pseudo-terminals joined by socat;
- ``pcsc``: the machine's pcscd (the product's manager) and its two vpcd slots;
- ``waiting``: bounded waits for a condition (threads, event loops, Textual's pilot).
"""
