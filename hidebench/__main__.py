from hidebench.cli import main

raise SystemExit(main())
