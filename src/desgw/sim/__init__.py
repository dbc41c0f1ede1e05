"""desgw.sim"""
