"""desgw.db"""
