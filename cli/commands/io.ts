// What a command may touch of its process: output streams and environment. Tests pass their own.

export interface CommandIO {
  out(text: string): void;
  err(text: string): void;
  env: NodeJS.ProcessEnv;
  /** stderr is a terminal: progress bars are drawn */
  isTTY: boolean;
}

export const processIO: CommandIO = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  env: process.env,
  isTTY: process.stderr.isTTY === true,
};
