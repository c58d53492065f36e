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

/** A raster image recognised by its header: its MIME type and size. */
export interface SniffedImage extends ImageSize {
  mimetype: "image/png" | "image/gif" | "image/jpeg" | "image/webp";
}

function headerImage(bytes: Buffer): SniffedImage | undefined {
  const typed = (mimetype: SniffedImage["mimetype"], size: ImageSize | undefined) =>
    size && { mimetype, ...size };
  if (startsWith(bytes, 0, "\x89PNG\r\n\x1a\n") && startsWith(bytes, 12, "IHDR")) {
    return bytes.length >= 24
      ? typed("image/png", { w: bytes.readUInt32BE(16), h: bytes.readUInt32BE(20) })
      : undefined;
  }
  if (startsWith(bytes, 0, "GIF87a") || startsWith(bytes, 0, "GIF89a")) {
    return bytes.length >= 10
      ? typed("image/gif", { w: bytes.readUInt16LE(6), h: bytes.readUInt16LE(8) })
      : undefined;
  }
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return typed("image/jpeg", jpegSize(bytes));
  if (startsWith(bytes, 0, "RIFF") && startsWith(bytes, 8, "WEBP")) {
    return typed("image/webp", webpSize(bytes));
  }
  return undefined;
}

/**
 * What the bytes are, by their header alone (never by what their sender says): a PNG, GIF, JPEG
 * or WebP with its type and size, read without decoding it; undefined for any other bytes (an
 * SVG, HTML), or a header that says nothing sensible.
 */
export function sniffImage(bytes: Uint8Array): SniffedImage | undefined {
  const image = headerImage(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  return image && image.w > 0 && image.h > 0 ? image : undefined;
}

/** The size a PNG, GIF, JPEG or WebP gives in its header (`sniffImage`), without its type. */
export function imageSize(bytes: Uint8Array): ImageSize | undefined {
  const image = sniffImage(bytes);
  return image && { w: image.w, h: image.h };
}
