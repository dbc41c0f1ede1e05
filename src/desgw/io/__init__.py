"""desgw.io"""
