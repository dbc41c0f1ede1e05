"""desgw.diff"""
