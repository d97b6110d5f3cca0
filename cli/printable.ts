// Text from files and the network (tensor names, notes, ids) goes to a terminal: control
// characters and bidirectional overrides are shown escaped, so a name cannot move the cursor,
// recolour the screen or forge a line.

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UNSAFE_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const escape = (c: string): string => {
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
};

/** `s` with every control character written as \xNN (\uNNNN above 0xff); newlines too unless kept. */
export function printable(s: string, keepNewlines = false): string {
  return s.replace(keepNewlines ? UNSAFE_BUT_NEWLINE : UNSAFE, escape);
}
