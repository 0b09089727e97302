import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Emitter } from '../../src/lib/index.ts';

test('a throwing listener is reported and counted, and the others still run', () => {
  const reported: unknown[] = [];
  const emitter = new Emitter<[number, string]>((error) => reported.push(error));
  const heard: string[] = [];
  emitter.on((n, s) => heard.push(`first ${n} ${s}`));
  emitter.on(() => {
    throw new Error('listener bug');
  });
  emitter.on((n, s) => heard.push(`third ${n} ${s}`));

  assert.equal(emitter.emit(1, 'a'), 1);
  assert.deepEqual(heard, ['first 1 a', 'third 1 a']);
  assert.equal(reported.length, 1);
  assert.equal((reported[0] as Error).message, 'listener bug');
  emitter.emit(2, 'b');
  assert.equal(emitter.listenerErrors, 2);
});

test('a throwing error hook does not stop delivery either', () => {
  const emitter = new Emitter<[]>(() => {
    throw new Error('hook bug');
  });
  let ran = 0;
  emitter.on(() => {
    throw new Error('listener bug');
  });
  emitter.on(() => ran++);
  assert.equal(emitter.emit(), 1);
  assert.equal(ran, 1);
});

test('without a hook a throwing listener becomes a process warning, not silence', async () => {
  const warned = new Promise<Error>((resolve) => process.once('warning', resolve));
  const emitter = new Emitter<[]>();
  emitter.on(() => {
    throw new Error('nobody asked for errors');
  });
  emitter.emit();
  const warning = await warned;
  assert.equal(warning.name, 'ListenerError');
  assert.match(warning.message, /nobody asked for errors/);
});

test('one function registered twice runs twice; each remover removes one registration', () => {
  const emitter = new Emitter<[]>();
  let ran = 0;
  const listener = (): void => {
    ran++;
  };
  const offFirst = emitter.on(listener);
  emitter.on(listener);
  emitter.emit();
  assert.equal(ran, 2);
  offFirst();
  offFirst();
  emitter.emit();
  assert.equal(ran, 3);
  assert.equal(emitter.size, 1);
});

test('a listener added or removed during delivery takes effect from the next emit', () => {
  const emitter = new Emitter<[]>();
  const heard: string[] = [];
  let offSecond = (): void => {};
  emitter.on(() => {
    heard.push('first');
    offSecond();
    emitter.on(() => heard.push('late'));
  });
  offSecond = emitter.on(() => heard.push('second'));
  emitter.emit();
  assert.deepEqual(heard, ['first', 'second']);
});
