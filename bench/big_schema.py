#!/usr/bin/env python3
"""Writes a schema with N models x F fields (default 100 x 15) to stdout, for timing
`lithair-gen generate` on a large schema."""
import sys

models = int(sys.argv[1]) if len(sys.argv) > 1 else 100
fields = int(sys.argv[2]) if len(sys.argv) > 2 else 15
types = ["string", "text", "bool", "int", "float", "uuid", "date", "datetime", "json",
         "list<string>", "enum"]
print("service: { name: big }")
print("roles: [viewer, editor]")
print("models:")
for m in range(models):
    print(f"  Model{m}:")
    print("    permissions: { read: [public], create: [editor], update: [editor], delete: [editor] }")
    print("    fields:")
    for f in range(fields):
        t = types[f % len(types)]
        if t == "enum":
            print(f"      field_{f}: {{ type: enum, values: [a, b, c], default: a }}")
        elif f == 0:
            print(f"      field_{f}: {{ type: string, unique: true, validate: {{ min_length: 1, max_length: 100 }} }}")
        elif f == fields - 1 and m > 0:
            print(f"      field_{f}: {{ type: \"ref<Model{m - 1}>\", optional: true }}")
        else:
            print(f"      field_{f}: {{ type: \"{t}\", optional: true }}")
