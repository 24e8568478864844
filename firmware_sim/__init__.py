"""swipepay firmware without I/O: the logic of the terminal, the phone applet and the user cards.

Every object here takes bytes or events in and gives bytes or events out (the sans-IO style of
h11), so the same code runs behind mock, PC/SC, nfcpy and TCP drivers and in tests.
"""
