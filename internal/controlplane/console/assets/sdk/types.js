/**
 * The API's JSON objects, as TypeScript types.
 *
 * Answers are handed back as the API sent them: plain objects with snake_case keys, times as
 * RFC 3339 strings. A field that a newer egressd adds is there at run time even though these
 * types do not name it yet.
 */
export {};
