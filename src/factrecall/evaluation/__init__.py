"""Greedy exact-match evaluation of QA and BIO recall."""
