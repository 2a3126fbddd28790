/**
 * A copy of `o` without `keys`: what `const { [key]: _, ...rest } = o` gives (own enumerable
 * string-keyed properties), for a test that sends something with a field or header left out.
 */
export function omit<T extends object, K extends keyof T & string>(o: T, ...keys: K[]): Omit<T, K> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !(keys as string[]).includes(k))) as Omit<T, K>;
}
