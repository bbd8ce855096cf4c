# Records into codec blocks as the box fills them (MicroPython and CPython): a record that does not
# fit finishes the block and opens the next. Works with any version's BlockEncoder (tests/codec_old).


def encode_blocks(enc, recs):
    """[(block bytes, first_seq, last_seq, count)] of `recs` through the BlockEncoder `enc`."""
    blocks = []
    i = 0
    while i < len(recs):
        if enc.add(recs[i]):
            i += 1
        else:
            blocks.append((enc.finish(), enc.first_seq, enc.last_seq, enc.count))
    blocks.append((enc.finish(), enc.first_seq, enc.last_seq, enc.count))
    return blocks
