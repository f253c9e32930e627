from prewarm.cli import main

raise SystemExit(main())
