# PNG files for the CLI tests, written and read with the standard library only (zlib).
#   png.py grey PATH W H v1,v2,...      a grey image with these pixel values (row by row)
#   png.py pattern PATH W H C SEED      a patterned image with C channels (1 or 3)
# Imported: read(PATH) -> (w, h, channels, rows), each row a bytearray of w * channels values.
import struct, sys, zlib


def write(path, w, h, c, px):
    raw = b''.join(b'\0' + bytes(px[y * w * c:(y + 1) * w * c]) for y in range(h))

    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', w, h, 8, {1: 0, 3: 2}[c], 0, 0, 0)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def pattern(w, h, c, seed):
    return [(x * 37 + y * 11 + k * 5 + seed * 53) % 256 for y in range(h) for x in range(w) for k in range(c)]


def read(path):
    data = open(path, 'rb').read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    pos, idat = 8, b''
    while pos < len(data):
        n, t = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if t == b'IHDR':
            w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
        elif t == b'IDAT':
            idat += body
        pos += 12 + n
    c = {0: 1, 2: 3, 6: 4}[ctype]
    raw, stride, out, prev = zlib.decompress(idat), w * c, [], bytearray(w * c)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - c] if i >= c else 0
            b = prev[i]
            cc = prev[i - c] if i >= c else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else cc)) & 255
        out.append(line)
        prev = line
    return w, h, c, out


if __name__ == '__main__':
    if sys.argv[1] == 'grey':
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), 1, [int(v) for v in sys.argv[5].split(',')])
    elif sys.argv[1] == 'pattern':
        w, h, c = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        write(sys.argv[2], w, h, c, pattern(w, h, c, int(sys.argv[6])))
    else:
        sys.exit('png.py: unknown command ' + sys.argv[1])
