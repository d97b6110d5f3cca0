// The coordinator service's log lines: "coordinator: …" text, or with --log-format json one JSON
// object a line ({time, level, msg, …fields}) for log collectors.

export type LogFormat = 'text' | 'json';
export type LogFields = Record<string, string | number | boolean | undefined>;

export interface ServiceLog {
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
}

export function serviceLog(format: LogFormat, write: (line: string) => void): ServiceLog {
  const line = (level: string, msg: string, fields: LogFields = {}) => {
    if (format === 'json') write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }));
    else {
      const extra = Object.entries(fields).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`).join(' ');
      write(`coordinator: ${level === 'info' ? '' : `${level}: `}${msg}${extra ? ` (${extra})` : ''}`);
    }
  };
  return { info: (m, f) => line('info', m, f), warn: (m, f) => line('warn', m, f) };
}
