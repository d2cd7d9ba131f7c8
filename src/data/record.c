/* The byte layout of one record (see record.h and docs/data-format.md). Encoding packs every field
 * byte by byte in little-endian order so databases move between machines; decoding checks every size
 * against the buffer so a corrupt record is an error, never a read past its end. */
#include "data/record.h"

#include <limits.h>
#include <string.h>

#define RECORD_HEADER_BYTES 20 /* magic, version, flags, channels, height, width */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* floats travel as the little-endian bytes of their IEEE-754 bits, so NaN markers survive exactly */
static void put_f32(uint8_t *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof(bits));
    put_u32(p, bits);
}

static float get_f32(const uint8_t *p)
{
    uint32_t bits = get_u32(p);
    float v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

static float native_f32(const float *values, int i)
{
    float v;
    memcpy(&v, (const uint8_t *)(const void *)values + 4 * (size_t)i, sizeof(v));
    return v;
}

size_t mtl_record_size(const mtl_record *r)
{
    return RECORD_HEADER_BYTES + 4 + 4 * (size_t)r->n_labels + 4 + 20 * (size_t)r->n_boxes + 4 + r->n_bytes;
}

void mtl_record_encode(const mtl_record *r, uint8_t *buf)
{
    uint8_t *p = buf;
    put_u32(p, MTL_RECORD_MAGIC);
    put_u16(p + 4, MTL_RECORD_VERSION);
    put_u16(p + 6, (uint16_t)r->flags);
    put_u32(p + 8, (uint32_t)r->channels);
    put_u32(p + 12, (uint32_t)r->height);
    put_u32(p + 16, (uint32_t)r->width);
    p += RECORD_HEADER_BYTES;
    put_u32(p, (uint32_t)r->n_labels);
    p += 4;
    /* the caller's arrays are native floats (possibly unaligned); the stored ones little-endian */
    for (int i = 0; i < r->n_labels; i++, p += 4)
        put_f32(p, native_f32(r->labels, i));
    put_u32(p, (uint32_t)r->n_boxes);
    p += 4;
    for (int i = 0; i < 5 * r->n_boxes; i++, p += 4)
        put_f32(p, native_f32(r->boxes, i));
    put_u32(p, (uint32_t)r->n_bytes);
    p += 4;
    if (r->n_bytes)
        memcpy(p, r->data, r->n_bytes);
}

/* Reads a u32 count at *pos and checks that `count` items of `item` bytes follow within size. */
static mtl_status take_array(const uint8_t *buf, size_t size, size_t *pos, size_t item, const char *field,
                             const char *what, uint32_t *count, mtl_error *err)
{
    if (size - *pos < 4)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s is corrupt: it ends before its %s count (%zu bytes)", what, field,
                        size);
    *count = get_u32(buf + *pos);
    *pos += 4;
    if (*count > INT_MAX || (size - *pos) / item < *count)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "%s is corrupt: %u %s need %zu bytes but only %zu remain of its %zu", what, *count, field,
                        (size_t)*count * item, size - *pos, size);
    return MTL_OK;
}

mtl_status mtl_record_decode(const uint8_t *buf, size_t size, const char *what, mtl_record *out, mtl_error *err)
{
    memset(out, 0, sizeof(*out));
    if (!buf || size < RECORD_HEADER_BYTES)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s is corrupt: %zu bytes, shorter than a record header", what,
                        buf ? size : 0);
    if (get_u32(buf) != MTL_RECORD_MAGIC)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "%s is not an mtl record (bad magic 0x%08x): the database is corrupt or was not written "
                        "by mtl convert",
                        what, get_u32(buf));
    uint16_t version = get_u16(buf + 4), flags = get_u16(buf + 6);
    if (version != MTL_RECORD_VERSION)
        return mtl_fail(err, MTL_ERR_UNSUPPORTED, "%s has record version %u; this mtl reads version %d", what,
                        version, MTL_RECORD_VERSION);
    if (flags & ~MTL_RECORD_ENCODED)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s has unknown flags 0x%04x", what, flags);
    uint32_t c = get_u32(buf + 8), h = get_u32(buf + 12), w = get_u32(buf + 16);
    if (c > INT_MAX || h > INT_MAX || w > INT_MAX)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s is corrupt: image size %ux%ux%u", what, c, h, w);

    size_t pos = RECORD_HEADER_BYTES;
    uint32_t n_labels, n_boxes, n_bytes;
    MTL_TRY(take_array(buf, size, &pos, 4, "labels", what, &n_labels, err));
    const uint8_t *labels = buf + pos;
    pos += 4 * (size_t)n_labels;
    MTL_TRY(take_array(buf, size, &pos, 20, "boxes", what, &n_boxes, err));
    const uint8_t *boxes = buf + pos;
    pos += 20 * (size_t)n_boxes;
    if (size - pos < 4)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s is corrupt: it ends before its image size (%zu bytes)", what, size);
    n_bytes = get_u32(buf + pos);
    pos += 4;
    if (n_bytes != size - pos)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s is corrupt: it says %u image bytes but %zu remain", what, n_bytes,
                        size - pos);
    if (!(flags & MTL_RECORD_ENCODED)) {
        /* raw planes: the bytes must be exactly channels x height x width */
        uint64_t planes = (uint64_t)c * h * (uint64_t)w;
        if (h != 0 && w != 0 && c > UINT64_MAX / h / w)
            planes = UINT64_MAX;
        if (planes != n_bytes)
            return mtl_fail(err, MTL_ERR_CORRUPT, "%s is corrupt: %u bytes of pixels for a %ux%ux%u image", what,
                            n_bytes, c, h, w);
    }
    out->flags = flags;
    out->channels = (int)c;
    out->height = (int)h;
    out->width = (int)w;
    out->n_labels = (int)n_labels;
    out->labels = (const float *)(const void *)labels;
    out->n_boxes = (int)n_boxes;
    out->boxes = (const float *)(const void *)boxes;
    out->n_bytes = n_bytes;
    out->data = buf + pos;
    return MTL_OK;
}

float mtl_record_label(const mtl_record *r, int i)
{
    return get_f32((const uint8_t *)(const void *)r->labels + 4 * (size_t)i);
}

float mtl_record_box(const mtl_record *r, int i)
{
    return get_f32((const uint8_t *)(const void *)r->boxes + 4 * (size_t)i);
}
