/**
 * The API's only body parser: JSON, parsed as text, with messages that say what is wrong. Keys that
 * can reach an object's prototype (__proto__, constructor, prototype) are refused wherever they
 * appear: no schema of the API has such a field, and a body that carries one is probing for
 * prototype pollution in whatever reads it later.
 */
import type { FastifyInstance } from 'fastify';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
/**
 * Deepest nesting of arrays and objects a body may have. The API's deepest body is three levels
 * ({"moves":[{...}]}); a few thousand levels would overflow the stack of JSON.parse's reviver.
 */
export const MAX_BODY_DEPTH = 32;

export function parseJsonBody(text: string): unknown {
  if (text.trim() === '') {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      'the body is empty but content-type is application/json: send a JSON object, or no content-type',
    );
  }
  const depth = nestingDepth(text);
  if (depth > MAX_BODY_DEPTH) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      `the body nests arrays and objects more than ${MAX_BODY_DEPTH} levels deep: no request needs that`,
    );
  }
  try {
    return JSON.parse(text, (key, value) => {
      if (FORBIDDEN_KEYS.has(key)) throw new ForbiddenKey(key);
      return value;
    });
  } catch (error) {
    if (error instanceof ForbiddenKey) {
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        `the body has a key "${error.key}": __proto__, constructor and prototype are refused as keys`,
      );
    }
    const reason = (error as Error).message;
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      `the body is not valid JSON: ${reason.length > 160 ? `${reason.slice(0, 160)}...` : reason}`,
    );
  }
}

/** How deep [ and { nest outside strings; stops counting once past the limit. Linear, no parsing. */
function nestingDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let index = 0; index < text.length; index++) {
    const char = text.charCodeAt(index);
    if (inString) {
      if (char === 0x5c)
        index++; // backslash: skip the escaped character
      else if (char === 0x22) inString = false;
    } else if (char === 0x22) inString = true;
    else if (char === 0x5b || char === 0x7b) {
      depth++;
      if (depth > deepest) deepest = depth;
      if (deepest > MAX_BODY_DEPTH) return deepest;
    } else if (char === 0x5d || char === 0x7d) depth--;
  }
  return deepest;
}

class ForbiddenKey extends Error {
  constructor(readonly key: string) {
    super(key);
  }
}

/**
 * Replaces fastify's parsers with this one for application/json: any other content-type (text/plain
 * included) is answered 415 rather than handed to a handler as a string.
 */
export function useJsonBodies(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (error) {
      done(error as Error, undefined);
    }
  });
}
