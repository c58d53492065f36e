/**
 * The first bytes of images as their formats write them, with the sizes their headers give:
 * enough for a reader of headers (the rest of an image does not matter to it).
 */

/** A PNG's signature and IHDR chunk. */
export function pngHeader(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(25);
  ihdr.writeUInt32BE(13, 0);
  ihdr.write("IHDR", 4, "latin1");
  ihdr.writeUInt32BE(w, 8);
  ihdr.writeUInt32BE(h, 12);
  ihdr.writeUInt8(8, 16); // bit depth
  ihdr.writeUInt8(6, 17); // RGBA
  return Buffer.concat([Buffer.from("\x89PNG\r\n\x1a\n", "latin1"), ihdr]);
}

/** A GIF's header and logical screen descriptor. */
export function gifHeader(w: number, h: number): Buffer {
  const bytes = Buffer.alloc(13);
  bytes.write("GIF89a", 0, "latin1");
  bytes.writeUInt16LE(w, 6);
  bytes.writeUInt16LE(h, 8);
  return bytes;
}

/** A JPEG's start, an APP0 (JFIF) segment and a baseline start of frame (SOF0). */
export function jpegHeader(w: number, h: number): Buffer {
  const app0 = Buffer.alloc(18);
  app0.writeUInt16BE(0xffe0, 0);
  app0.writeUInt16BE(16, 2);
  app0.write("JFIF\0", 4, "latin1");
  const sof = Buffer.alloc(19);
  sof.writeUInt16BE(0xffc0, 0);
  sof.writeUInt16BE(17, 2);
  sof.writeUInt8(8, 4);
  sof.writeUInt16BE(h, 5);
  sof.writeUInt16BE(w, 7);
  return Buffer.concat([Buffer.from([0xff, 0xd8]), app0, sof]);
}

/** A WebP of the extended format: RIFF, WEBP and a VP8X chunk. */
export function webpHeader(w: number, h: number): Buffer {
  const bytes = Buffer.alloc(30);
  bytes.write("RIFF", 0, "latin1");
  bytes.writeUInt32LE(22, 4);
  bytes.write("WEBPVP8X", 8, "latin1");
  bytes.writeUInt32LE(10, 16);
  bytes.writeUIntLE(w - 1, 24, 3);
  bytes.writeUIntLE(h - 1, 27, 3);
  return bytes;
}
