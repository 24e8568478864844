"""The harness above the drivers: process helpers, benchmarks, fault loops, the real-stack
launcher and the in-process bench.  It runs the terminal and phone applications the way users
do (as ``swipepay`` processes, or in-process through the same application classes)."""
