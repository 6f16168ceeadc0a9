"""Tests of the built-in VMS simulator."""
