import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { imageInfo } from "../../functions/shared/image-size.ts";
import { gifHeader, jpegHeader, pngHeader, webpHeader } from "../support/images.ts";

describe("imageInfo: the width and height an image's header gives", () => {
  it("reads PNG, GIF, JPEG (after other segments) and WebP headers", () => {
    expect(imageInfo(pngHeader(640, 480))).toMatchObject({ w: 640, h: 480 });
    expect(imageInfo(gifHeader(32, 16))).toMatchObject({ w: 32, h: 16 });
    expect(imageInfo(jpegHeader(1920, 1080))).toMatchObject({ w: 1920, h: 1080 });
    expect(imageInfo(webpHeader(4000, 3000))).toEqual({ mimetype: "image/webp", w: 4000, h: 3000 });
  });

  it("reads a view into a larger buffer from the view's start", () => {
    const backing = Buffer.concat([Buffer.from("junk"), gifHeader(7, 9)]);
    expect(imageInfo(backing.subarray(4))).toEqual({ mimetype: "image/gif", w: 7, h: 9 });
  });

  it("undefined for other bytes, truncated headers and zero sizes", () => {
    expect(imageInfo(Buffer.from("%PDF-1.7"))).toBeUndefined();
    expect(imageInfo(pngHeader(10, 10).subarray(0, 20))).toBeUndefined();
    expect(imageInfo(jpegHeader(10, 10).subarray(0, 24))).toBeUndefined();
    expect(imageInfo(gifHeader(0, 10))).toBeUndefined();
  });

  it("never throws, whatever the bytes after a known signature", () => {
    const signatures = [
      Buffer.from("\x89PNG\r\n\x1a\n", "latin1"),
      Buffer.from("GIF89a"),
      Buffer.from([0xff, 0xd8]),
      Buffer.from("RIFF\0\0\0\0WEBPVP8 ", "latin1"),
      Buffer.from("RIFF\0\0\0\0WEBPVP8L", "latin1"),
    ];
    fc.assert(
      fc.property(fc.constantFrom(...signatures), fc.uint8Array({ maxLength: 64 }), (sig, rest) => {
        const size = imageInfo(Buffer.concat([sig, rest]));
        expect(size === undefined || (size.w > 0 && size.h > 0)).toBe(true);
      }),
    );
  });
});

describe("imageInfo: the type by the bytes, never by what the sender says", () => {
  it("types PNG, GIF, JPEG and WebP by their headers; an SVG, HTML or text is no image", () => {
    expect(imageInfo(pngHeader(640, 480))).toEqual({ mimetype: "image/png", w: 640, h: 480 });
    expect(imageInfo(gifHeader(32, 16))).toMatchObject({ mimetype: "image/gif" });
    expect(imageInfo(jpegHeader(1920, 1080))).toMatchObject({ mimetype: "image/jpeg" });
    for (const text of [
      '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
      "<!doctype html><img src=x onerror=alert(1)>",
      "GIF8 not quite",
    ]) {
      expect(imageInfo(Buffer.from(text))).toBeUndefined();
    }
  });
});
