INSERT INTO bench_commit (v) VALUES (1);
