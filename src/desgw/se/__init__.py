"""desgw.se"""
