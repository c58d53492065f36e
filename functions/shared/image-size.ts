/** An image's width and height in pixels. */
export interface ImageSize {
  w: number;
  h: number;
}

const startsWith = (bytes: Buffer, at: number, ascii: string) =>
  bytes.length >= at + ascii.length && bytes.toString("latin1", at, at + ascii.length) === ascii;

/** JPEG's start-of-frame markers: SOF0 to SOF15 but DHT (C4), JPG (C8) and DAC (CC). */
const isStartOfFrame = (marker: number) =>
  marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;

function jpegSize(bytes: Buffer): ImageSize | undefined {
  let at = 2;
  while (at + 9 <= bytes.length) {
    if (bytes[at] !== 0xff) return undefined;
    const marker = bytes[at + 1] as number;
    // Fill bytes, and the markers that have no length.
    if (marker === 0xff || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += marker === 0xff ? 1 : 2;
      continue;
    }
    if (isStartOfFrame(marker)) {
      return { h: bytes.readUInt16BE(at + 5), w: bytes.readUInt16BE(at + 7) };
    }
    at += 2 + bytes.readUInt16BE(at + 2);
  }
  return undefined;
}

function webpSize(bytes: Buffer): ImageSize | undefined {
  if (startsWith(bytes, 12, "VP8 ") && bytes.length >= 30) {
    return { w: bytes.readUInt16LE(26) & 0x3fff, h: bytes.readUInt16LE(28) & 0x3fff };
  }
  if (startsWith(bytes, 12, "VP8L") && bytes.length >= 25 && bytes[20] === 0x2f) {
    const bits = bytes.readUInt32LE(21);
    return { w: (bits & 0x3fff) + 1, h: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (startsWith(bytes, 12, "VP8X") && bytes.length >= 30) {
    return { w: bytes.readUIntLE(24, 3) + 1, h: bytes.readUIntLE(27, 3) + 1 };
  }
  return undefined;
}

/** The image type a header belongs to, by its signature. */
function typeOf(bytes: Buffer): string | undefined {
  if (startsWith(bytes, 0, "\x89PNG\r\n\x1a\n") && startsWith(bytes, 12, "IHDR"))
    return "image/png";
  if (startsWith(bytes, 0, "GIF87a") || startsWith(bytes, 0, "GIF89a")) return "image/gif";
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return "image/jpeg";
  if (startsWith(bytes, 0, "RIFF") && startsWith(bytes, 8, "WEBP")) return "image/webp";
  return undefined;
}

function headerSize(bytes: Buffer, type: string | undefined): ImageSize | undefined {
  switch (type) {
    case "image/png":
      return bytes.length >= 24
        ? { w: bytes.readUInt32BE(16), h: bytes.readUInt32BE(20) }
        : undefined;
    case "image/gif":
      return bytes.length >= 10
        ? { w: bytes.readUInt16LE(6), h: bytes.readUInt16LE(8) }
        : undefined;
    case "image/jpeg":
      return jpegSize(bytes);
    case "image/webp":
      return webpSize(bytes);
  }
  return undefined;
}

/**
 * The most pixels on a side believed: past it, a header says nothing sensible (PNG's 32-bit
 * fields allow 4 billion, which a client would try to lay out).
 */
export const MAX_IMAGE_SIDE = 65_535;

/**
 * A PNG's, GIF's, JPEG's or WebP's type and size, from the signature and header of its bytes,
 * read without decoding the image; undefined for any other bytes (an SVG, HTML), or a header
 * that says nothing sensible (no size, 0, over `MAX_IMAGE_SIDE`).
 */
export function imageInfo(bytes: Uint8Array): (ImageSize & { mimetype: string }) | undefined {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const mimetype = typeOf(buffer);
  const size = headerSize(buffer, mimetype);
  const sensible = (side: number) => side > 0 && side <= MAX_IMAGE_SIDE;
  return mimetype && size && sensible(size.w) && sensible(size.h)
    ? { mimetype, w: size.w, h: size.h }
    : undefined;
}
