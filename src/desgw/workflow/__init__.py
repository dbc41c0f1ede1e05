"""desgw.workflow"""
