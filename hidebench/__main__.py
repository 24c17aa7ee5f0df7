from hidebench.app.cli import main

raise SystemExit(main())
