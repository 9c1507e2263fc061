"""Ids of the arithmetic operations, shared by the Python front end and the kernels."""
OP_ADD, OP_SUB, OP_MUL, OP_FMA = range(4)
